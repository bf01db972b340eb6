//! Integration tests: logging.
