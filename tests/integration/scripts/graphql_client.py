"""A GraphQL client as tools use one: gql from PyPI fetches selfmon's schema with graphql-core's standard
introspection query, then validates each query against that schema before sending it, as its documentation
describes (https://gql.readthedocs.io/en/stable/usage/validation.html).

Usage: graphql_client.py URL KEY. Prints JSON: the schema's query fields, the answer of a valid query, and what the
client itself said of a query that asks for a field the schema does not have (never sent).
"""

import json
import sys

from gql import Client, gql
from gql.transport.requests import RequestsHTTPTransport
from graphql import GraphQLError

url, key = sys.argv[1], sys.argv[2]
transport = RequestsHTTPTransport(url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
with Client(transport=transport, fetch_schema_from_transport=True) as session:
    answer = session.execute(gql("{ health { status total checks { name status plugin } } }"))
    schema = session.client.schema
    try:
        session.execute(gql("{ health { status uptime } }"))
        invalid = None
    except GraphQLError as error:
        invalid = error.message

print(
    json.dumps(
        {
            "query_fields": sorted(schema.query_type.fields),
            "answer": answer,
            "invalid": invalid,
        }
    )
)
