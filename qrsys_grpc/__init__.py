"""qrsys: a gRPC service that stores QR code definitions and renders them."""
