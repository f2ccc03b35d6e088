"""Channel types: one module each, registered in `registry.TYPES`."""
