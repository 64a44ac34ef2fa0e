"""The stages that work on one action's spec: transport checks, reading and validating
the body, sealed bound values, running the handler, serialising its return value.

``bastion.pipeline.STAGES`` puts them, and the guards below them, in order.
"""
