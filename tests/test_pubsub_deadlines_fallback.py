"""The ack-deadline behaviour (``tests.pubsub_deadline_checks``) on the fallback emulator."""

import pytest

from tests.pubsub_deadline_checks import (
    test_a_restarted_subscriber_keeps_receiving,
    test_message_whose_ack_deadline_expires_is_redelivered,
    test_streamed_messages_are_received_and_stay_acked,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("pubsub_emulator", ["fallback"], indirect=True),
]

__all__ = [
    "test_a_restarted_subscriber_keeps_receiving",
    "test_message_whose_ack_deadline_expires_is_redelivered",
    "test_streamed_messages_are_received_and_stay_acked",
]
