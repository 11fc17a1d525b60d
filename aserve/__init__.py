"""aserve: a drop-in, asyncio model server for TensorFlow SavedModels (see README.md)."""
