"""Tests of seradv.attacks (mirrors src/seradv/attacks)."""
