"""The gRPC wire contracts (`.proto` sources) and the Python generated from them."""
