"""Channel adapters: one module per provider channel, sharing the contract in `base`."""
