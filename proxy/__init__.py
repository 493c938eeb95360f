"""The M6-facing REST proxy: accept clip requests, answer their status.

PREFECT_API_URL=http://127.0.0.1:4200/api uvicorn proxy.app:create_app --factory --port 8080
"""
