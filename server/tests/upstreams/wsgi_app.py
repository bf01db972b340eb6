"""A small WSGI application for the proxy tests, run by gunicorn."""
import json


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/stream":
        # No length: gunicorn sends it chunked.
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"part {i}\n".encode() for i in range(1000))
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    doc = {
        "method": environ["REQUEST_METHOD"],
        "path": path,
        "query": environ.get("QUERY_STRING", ""),
        "xff": environ.get("HTTP_X_FORWARDED_FOR"),
        "host": environ.get("HTTP_HOST"),
        "body": body.decode("latin-1"),
    }
    out = json.dumps(doc).encode()
    start_response("201 Created", [("Content-Type", "application/json"), ("Content-Length", str(len(out))), ("X-App", "wsgi")])
    return [out]
