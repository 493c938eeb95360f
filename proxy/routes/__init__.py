"""The proxy's endpoints, one ``APIRouter`` per resource."""
