"""From a received message to handler runs: parse and dispatch a receive batch (`messages`),
record events and runs idempotently (`runs`), run or hand off each handler exactly once
(`dispatch`, `execution`), and record messages nobody could parse (`message_failures`)."""
