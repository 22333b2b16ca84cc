"""Cloud-event intake: an HTTP endpoint turning Alibaba Cloud, AWS and CloudEvents payloads into Event records."""
