"""Operating a dispatcher: the doctor's checks, metrics, and the demo."""
