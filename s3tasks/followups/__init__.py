"""Follow-up commands a handler enqueues (`commands`) and the transactional outbox that sends
them once the handler's transaction commits (`outbox`)."""
