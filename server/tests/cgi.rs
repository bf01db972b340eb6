//! Integration tests: cgi.
