"""Thin routes: parse typed input, call one handler method, return typed output."""
