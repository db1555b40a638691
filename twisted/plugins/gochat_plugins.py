from twisted.application.service import ServiceMaker

gochat_gateway = ServiceMaker(
    "gochat-gateway", "gochat.gateway.tap", "gochat WebSocket gateway (embedded logic by default)", "gochat-gateway"
)
gochat_logic = ServiceMaker("gochat-logic", "gochat.logic.tap", "gochat logic service (gRPC)", "gochat-logic")
