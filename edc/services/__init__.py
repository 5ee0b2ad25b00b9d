"""Use cases as plain functions taking (session, actor, ...). They never commit or import Flask."""
