"""The HTTP edge: origins, the network policy (client address, https, trusted hosts and
proxies), security headers, the JSON error envelope and redirects, multipart parts.

Nothing here knows an action: these are the facts of one request and the shapes of a
reply.
"""
