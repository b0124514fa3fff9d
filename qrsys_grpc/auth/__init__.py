"""AuthService: accounts, passwords, tokens and the RPC handlers."""
