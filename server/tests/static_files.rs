//! Integration tests: static_files.
