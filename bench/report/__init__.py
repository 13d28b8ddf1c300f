"""Reporting from stored records only: tables, figures and checks against references."""
