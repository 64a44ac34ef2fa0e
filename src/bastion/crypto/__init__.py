"""Keys and what is made with them: purpose keys (HKDF) with rotation, the masked CSRF
token and sealed values, over bytes only.

Nothing here knows a request, a session or an action: a layer that can be read, and
tested, as cryptography alone.
"""
