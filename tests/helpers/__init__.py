"""Test helpers: small audio, tone corpora, tiny models (imported as ``tests.helpers``)."""
