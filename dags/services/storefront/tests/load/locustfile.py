"""Load test of the storefront: each user sends one request per second, so ``--users`` is the request rate
(the load suite passes a share of production's traffic as ``{users}``)."""

from locust import HttpUser, constant_throughput, task


class Shopper(HttpUser):
    wait_time = constant_throughput(1)

    @task(3)
    def browse(self):
        self.client.get("/api/products")

    @task(1)
    def cart(self):
        self.client.get("/api/cart")
