"""Server-rendered admin pages (grows with the admin UI issue)."""
