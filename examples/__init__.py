"""Example flows: `flowrt serve --flows examples.demo:ALL`, `examples.orders:ALL`, ..."""
