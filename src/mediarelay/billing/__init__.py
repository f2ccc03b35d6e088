"""Prices, balances and the ledger (grows with the billing issue)."""
