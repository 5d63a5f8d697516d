"""Builders shared by several test modules (test modules never import each other): random
chains and orders (``chains``, ``orders``), nested block trees (``trees``) and short spellings of
the front door for tests (``api``)."""
