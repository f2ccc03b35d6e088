"""Result-file storage backends: `base.Storage` (the interface), `local` (the data directory, default),
`s3` (an S3-compatible bucket); `factory.open_storage` picks one from the settings (docs/storage.md)."""
