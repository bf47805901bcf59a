"""The serving champion as the evaluate step's reference."""
