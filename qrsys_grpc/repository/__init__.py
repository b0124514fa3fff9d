"""The only code that touches PostgreSQL: tables, one repository per aggregate."""
