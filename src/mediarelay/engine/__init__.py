"""The task lifecycle and the drivers that decide when and where its steps run."""
