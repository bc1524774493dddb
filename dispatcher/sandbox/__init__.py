"""The local provider sandbox: a leaf that nothing in the product imports but the bootstrap."""
