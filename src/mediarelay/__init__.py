"""mediarelay: a self-hosted gateway for asynchronous AI media-generation tasks."""

__version__ = "0.1.0"
