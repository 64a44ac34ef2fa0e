"""What an action is: its spec (data only), the one walker over annotations that reads a
handler's signature, the registry that builds specs, policies, and the audit inventory.
"""
