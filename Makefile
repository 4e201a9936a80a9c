# Thin wrappers around tasks.py, which needs nothing but Python 3.11+.
.PHONY: demo test lint check
demo:
	python3 tasks.py demo
test:
	python3 tasks.py test
lint:
	python3 tasks.py lint
check:
	python3 tasks.py check
