"""What the Flower apps call: site training, held-out evaluation, aggregation. No Flower imports here."""
