"""Message classes generated from proto/chat/v1 by scripts/generate (protoc --python_out). Do not edit."""
