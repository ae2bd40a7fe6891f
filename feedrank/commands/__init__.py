"""The ``feedrank`` commands, one module per command group; ``feedrank.cli`` registers them.

Each module imports only click, pydantic and the foundation (``core``) at
its top, and its stage (Feast, MLflow, torch) inside the command, so
``feedrank --help`` does not wait seconds for libraries it does not use.
"""
