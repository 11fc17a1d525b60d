"""Load-test and accuracy tools for aserve; kept outside pytest collection."""
