"""AI feedback: a judge rates every response on Helpfulness, Ethical Considerations and Visual
Faithfulness. `annotate` is the stage; `prompts`, `parse`, `openai_judge`, `batch`, `limits` and
`report` are its parts, and `base` the interface the OpenAI judge and the scene judge share."""
