"""QrCodeService: content kinds, rendering and the RPC handlers."""
