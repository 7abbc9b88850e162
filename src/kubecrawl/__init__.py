"""kubecrawl: Kubernetes-native web page metadata fetching and site crawling."""

__version__ = "0.1.0"
