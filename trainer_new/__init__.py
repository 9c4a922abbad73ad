"""Staging area for modules that will move into the restructured ``trainer`` package.

Everything here depends only on torch and numpy (no ``trainer.*`` imports), so each file can be
dropped into the new layout unchanged.
"""
