"""The aggregator's Flower ServerApp and its strategy."""
