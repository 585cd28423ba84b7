"""The aiohttp transport: tus and IETF uploads at ``/files/``, downloads, ``/api``."""
