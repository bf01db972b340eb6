#!/bin/sh
# A CGI script: headers, a blank line, then the body.
printf 'Content-Type: text/plain\r\n\r\n'
printf 'hello from %s\n' "$SCRIPT_NAME"
printf 'query: %s\n' "$QUERY_STRING"
