"""The WeCom / WeChat Official Account wire protocol: signatures, callback crypto, message XML."""
