"""Composition root: settings, database, templates, dispatcher, HTTP app, scheduler."""
