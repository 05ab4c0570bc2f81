"""Flower-as-framework benchmark app (bench/flower-engine)."""
