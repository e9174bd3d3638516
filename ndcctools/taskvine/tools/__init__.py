"""Command-line programs: ``vine_worker``."""
