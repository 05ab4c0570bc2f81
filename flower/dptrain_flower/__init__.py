"""The dptrain ServerApp for Flower 1.42 (see server_app)."""
