"""`python -m services.conversation` runs the conversation service."""

from services.conversation.app import ConversationService
from services.runtime.server import run

if __name__ == "__main__":
    run(ConversationService())
