"""Result-file storage backends."""
